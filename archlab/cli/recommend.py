"""``archlab recommend IMAGE``: the texture score, the width with its probabilities, and a full ArchSpec."""

from __future__ import annotations

import json

from archlab import tasks
from archlab.cli import add_task_flags, make_task
from archlab.vocabulary import check_image_source


def register(subparsers) -> None:
    p = subparsers.add_parser("recommend", help="recommend a DIP architecture for an image from its texture",
                              description=__doc__.splitlines()[0])
    p.add_argument("image", help="an image file or a built-in (clean or the degraded observation)")
    p.add_argument("--task", default="denoise", choices=sorted(tasks.TASKS),
                   help="the task the architecture is for (default denoise)")
    add_task_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    task = make_task(args)
    check_image_source(args.image)
    from archlab import images, recommend

    advice = recommend.recommend(images.load(args.image), task=task)
    if args.json:
        print(json.dumps(images.finite_json(advice.to_dict()), indent=2, allow_nan=False))
        return 0
    probs = ", ".join(f"{w}: {p:.2f}" for w, p in sorted(advice.probabilities.items()))
    print(f"texture score {advice.texture_score:.2f} (0 = flat, 1 = white-noise-like); "
          f"estimated noise σ {advice.noise_sigma * 255:.1f}/255 (discounted from the features)")
    if advice.alternatives:
        print(f"configuration: {advice.sources['width']}")
        for choice in advice.alternatives:
            print(f"  {choice.gain_over_default:+.2f} dB, {choice.seconds:.2f} {choice.time_unit}: "
                  + ", ".join(f"{k}={v}" for k, v in choice.config.items()))
        print(f"(the texture classifier's width probabilities: {probs})")
    else:
        print(f"width {advice.width} (probabilities {probs}); " + advice.sources["width"])
        for key in ("depth", "skip", "upsampler", "lipschitz", "lr", "iterations"):
            print(f"{key} {advice.spec.to_dict().get(key, advice.fit.get(key))}: {advice.sources[key]}")
    print(f"fit: {', '.join(f'{k}={v}' for k, v in advice.fit.items())}")
    print(f"restarts: {advice.restarts} (the mean of {advice.restarts} seeded fits, as `restore --arch auto` "
          f"fits them)")
    print("# ArchSpec (save as spec.toml and pass --arch spec.toml, or use --arch auto)")
    print(advice.spec.to_toml(), end="")
    return 0
