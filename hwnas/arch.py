"""Architecture files: one choice per position of a search space, as readable JSON.

Format::

    {
      "space": "proxyless-tiny",
      "space_params": {"resolution": 32, ...},   # optional overrides of the preset
      "choices": ["k3_e6", "zero", "k5_e3", ...]
    }

Loading validates everything and raises :class:`HwnasError` naming the file and
the offending field.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from hwnas.costs import Cost, op_cost, total_cost
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.ops import OpSpec
from hwnas.spaces import PRESETS, SearchSpace, get_space


@dataclass
class Architecture:
    space_name: str
    choices: list[str]
    space_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._space: SearchSpace | None = None

    @property
    def space(self) -> SearchSpace:
        if self._space is None:
            self._space = get_space(self.space_name, self.space_params)
        return self._space

    def validate(self) -> None:
        space = self.space
        if len(self.choices) != len(space.positions):
            raise HwnasError(
                f"field 'choices' has {len(self.choices)} entries, space {self.space_name} has "
                f"{len(space.positions)} positions"
            )
        for i, (pos, choice) in enumerate(zip(space.positions, self.choices)):
            if not isinstance(choice, str):
                raise HwnasError(f"field 'choices[{i}]' must be a string, got {choice!r}")
            if choice not in pos.names:
                raise HwnasError(
                    f"field 'choices[{i}]' is {choice!r}, not allowed at position {i}; "
                    f"allowed: {', '.join(pos.names)}"
                )

    def ops(self) -> list[OpSpec]:
        """Every operator of the network, stem to classifier, zero blocks removed."""
        return self.space.ops_for(self.choices)

    def cost(self) -> Cost:
        return total_cost(self.ops())

    def to_dict(self) -> dict:
        overrides = {k: v for k, v in self.space.params.items() if PRESETS[self.space_name].get(k) != v}
        data = {"space": self.space_name}
        if overrides:
            data["space_params"] = overrides
        data["choices"] = list(self.choices)
        return data

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: object) -> "Architecture":
        if not isinstance(data, dict):
            raise HwnasError("architecture must be a JSON object")
        unknown = set(data) - {"space", "space_params", "choices", "meta"}
        if unknown:
            raise HwnasError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if "space" not in data:
            raise HwnasError("missing field 'space'")
        if not isinstance(data["space"], str):
            raise HwnasError("field 'space' must be a string")
        if "choices" not in data:
            raise HwnasError("missing field 'choices'")
        if not isinstance(data["choices"], list):
            raise HwnasError("field 'choices' must be a list")
        params = data.get("space_params", {})
        if not isinstance(params, dict):
            raise HwnasError("field 'space_params' must be an object")
        arch = cls(data["space"], list(data["choices"]), dict(params))
        arch.validate()
        return arch

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        path = Path(path)
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except HwnasError as exc:
            raise HwnasError(f"{path}: {exc}") from None


def sample_architecture(space: SearchSpace, rng: random.Random) -> Architecture:
    """A uniformly random architecture of ``space`` (stage widths too, when the space searches them)."""
    if space.searches_width:
        space = space.at_widths([rng.choice(space.width_choices) for _ in range(space.num_stages)])
    choices = [rng.choice(pos.names) for pos in space.positions]
    return Architecture(space.name, choices, space_overrides(space))


def space_overrides(space: SearchSpace) -> dict:
    """The space's parameters that differ from its preset (what an architecture file records)."""
    return {k: v for k, v in space.params.items() if PRESETS[space.name].get(k) != v}


def architecture_of(space: SearchSpace, choices: list[str]) -> Architecture:
    """An architecture of ``space`` (keeping its overridden fields) with the given choices."""
    arch = Architecture(space.name, list(choices), space_overrides(space))
    arch._space = space
    arch.validate()
    return arch


def cost_table(arch: Architecture) -> list[tuple[str, OpSpec, Cost]]:
    """Per-block rows (label, op, cost) for display; zero blocks are listed with no cost."""
    space = arch.space
    rows = [("stem", op, op_cost(op)) for op in space.stem]
    for pos, choice in zip(space.positions, arch.choices):
        op = pos.op(choice)
        rows.append((f"pos{pos.index}:{choice}", op, op_cost(op)))
    rows += [("head", op, op_cost(op)) for op in space.head]
    return rows
