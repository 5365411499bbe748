"""One attention setting of an experiment grid, written as a short string.

    mha                      dense causal attention
    swa:512                  a sliding window of 512 keys
    dma:512                  DMA keeping 512 keys (the paper's rule: the top 512 by score)
    dma:512:l64              the local-window variant: the last 64 keys plus the top 448 older ones
    dma:512:l64:s4           ... and the first 4 keys of each document (sinks)
    dma:512:hq               DMA with one key score per query head (bias_heads = num_heads)

``parse_cell`` turns the string into a ``Cell``; ``Cell.overrides`` into ``train.py`` overrides;
``Cell.name`` into the file-system-safe name of a run (``dma512_l64_s4``).
"""

from __future__ import annotations

import dataclasses

SYNTAX = "mha | swa:W | dma:W[:lL][:sS][:hq]"


@dataclasses.dataclass(frozen=True)
class Cell:
    attention: str
    window: int | None = None
    local_window: int = 0
    sink_keys: int = 0
    per_query_head_bias: bool = False

    def _options(self) -> list[str]:
        return ([f"l{self.local_window}"] if self.local_window else []) + \
            ([f"s{self.sink_keys}"] if self.sink_keys else []) + (["hq"] if self.per_query_head_bias else [])

    @property
    def name(self) -> str:
        """File-system-safe: ``dma512_l64_s4``."""
        return "_".join([self.attention + (str(self.window) if self.window else ""), *self._options()])

    @property
    def spec(self) -> str:
        """The string ``parse_cell`` reads back: ``dma:512:l64:s4``."""
        return ":".join([self.attention, *([str(self.window)] if self.window else []), *self._options()])

    @property
    def is_variant(self) -> bool:
        return bool(self.local_window or self.sink_keys)

    def overrides(self, num_heads: int | None = None) -> tuple[str, ...]:
        """``train.py`` overrides that set this attention (``num_heads``: needed for ``hq``)."""
        out = [f"model.attention={self.attention}", f"model.window={self.window}" if self.window else "model.window=null"]
        if self.attention == "dma":
            out += [f"model.dma_local_window={self.local_window}", f"model.dma_sink_keys={self.sink_keys}"]
            if self.per_query_head_bias:
                if num_heads is None:
                    raise ValueError(f"{self.spec}: a bias per query head needs the model's num_heads")
                out.append(f"model.bias_heads={num_heads}")
        return tuple(out)


def parse_cell(text: str) -> Cell:
    """A ``Cell`` from its string (``SYNTAX``); ValueError naming the string otherwise."""
    fields = text.strip().lower().split(":")
    attention, rest = fields[0], fields[1:]
    bad = ValueError(f"bad cell {text!r}: want {SYNTAX}")
    if attention == "mha":
        if rest:
            raise bad
        return Cell("mha")
    if attention not in ("swa", "dma") or not rest or not rest[0].isdigit() or int(rest[0]) < 1:
        raise bad
    window, options = int(rest[0]), rest[1:]
    if attention == "swa":
        if options:
            raise bad
        return Cell("swa", window)
    local = sinks = 0
    per_head = False
    for option in options:
        if option[:1] == "l" and option[1:].isdigit():
            local = int(option[1:])
        elif option[:1] == "s" and option[1:].isdigit():
            sinks = int(option[1:])
        elif option == "hq":
            per_head = True
        else:
            raise bad
    if local + sinks > window:
        raise ValueError(f"bad cell {text!r}: local keys + sinks ({local} + {sinks}) exceed the window {window}")
    return Cell("dma", window, local, sinks, per_head)


def parse_cells_or_exit(texts) -> list[Cell]:
    """``parse_cell`` of each string; a bad one ends the program with its message (command lines)."""
    try:
        return [parse_cell(text) for text in texts]
    except ValueError as e:
        raise SystemExit(str(e)) from None
