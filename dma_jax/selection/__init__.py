"""The dynamic-mask selection, without any T x T array.

Under causal top-w selection by a query-independent score, key j is kept by exactly the queries
of one interval ``[j, end_j)`` (its live range). Everything the fast paths need follows from those
ranges:

- ``live_ranges`` (``ranges.py``, with the wavelet-matrix order statistics of
  ``order_statistics.py``): every key's ``end_j`` in O(T log T); ``static_keep``: the non-causal
  top-w per segment;
- ``slots.py``: each kept key inherits the slot of the key it evicts, so a tile's carried keys fit
  a fixed table of w slots;
- ``tables.py``: the key intervals and per-tile key tables the kernels and the XLA path read
  (``key_tables``: one builder for both kernel backends); ``noncausal.py``: the non-causal tables;
- ``segments.py``: where each packed document's run starts and ends.
"""

from dma_jax.selection.ranges import live_ranges, static_keep, valid_keys
from dma_jax.selection.slots import carried_key_table, key_slots
from dma_jax.selection.tables import KeyTables, carried_keys, key_intervals, key_tables, num_tiles, tile_key_lists

__all__ = [
    "KeyTables",
    "carried_key_table",
    "carried_keys",
    "key_intervals",
    "key_slots",
    "key_tables",
    "live_ranges",
    "num_tiles",
    "static_keep",
    "tile_key_lists",
    "valid_keys",
]
