"""Small study files for the tests: one builder instead of a TOML text per test module."""

import json

#: A grid of two upsamplers on one 32-px crop, fitted briefly: what most study tests need.
BASE = {
    "seeds": [0],
    "tasks": [{"task": "denoise", "sigma": 25}],
    "images": [{"source": "astronaut", "size": 64, "crop": 32}],
    "arch": {"kind": "hourglass", "depth": 2, "width": 8, "skip": 2},
    "fit": {"iterations": 100, "eval_every": 10, "window": 20},
    "space": {"upsampler": ["nearest", "bilinear"]},
    "objectives": {"peak_psnr": "maximize"},
}


def _value(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # strings, numbers and lists of them are the same in TOML


def study_toml(name: str, **changes) -> str:
    """The TOML text of :data:`BASE` named ``name``, with whole top-level keys or sections replaced."""
    study = {"name": name, **BASE, **changes}
    lines = [f"{key} = {_value(value)}" for key, value in study.items() if not isinstance(value, (dict, list))
             or (isinstance(value, list) and not any(isinstance(v, dict) for v in value))]
    for key, value in study.items():
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for table in value:
                lines += ["", f"[[{key}]]", *(f"{k} = {_value(v)}" for k, v in table.items())]
        elif isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{k} = {_value(v)}" for k, v in value.items())]
    return "\n".join(lines) + "\n"
