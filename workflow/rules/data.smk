rule synthesize_demo:
    output:
        root=directory(f"{paths.DEMO_ROOT}/{{demo_set}}"),
        # small and checksummed by Snakemake: re-runs ingest when this job re-runs, not when DVC resets times
        stamp=demo_stamp("{demo_set}"),
    log:
        f"{R}/logs/synthesize_demo/{{demo_set}}.log",
    priority: PRETRAIN_FIRST
    conda:
        "../../envs/data.yaml"
    params:
        demo=demo_params,
    script:
        "../scripts/run_stage.py"


rule ingest_dataset:
    input:
        unpack(raw_inputs),
    output:
        manifest=at(paths.MANIFEST),
        quarantine=at(paths.QUARANTINE),
        duplicates=at(paths.DUPLICATES),
    log:
        f"{R}/logs/ingest_dataset/{{dataset}}.log",
    priority: PRETRAIN_FIRST
    conda:
        "../../envs/data.yaml"
    params:
        dataset=lambda wildcards: medxfer.config.canonical(DATASETS[wildcards.dataset]),
        seed=config["seed"],
        # content, not file times, decides whether the raw data changed (README: re-running only what changed)
        fingerprint=raw_fingerprint,
    script:
        "../scripts/run_stage.py"


rule cache_images:
    input:
        raw=ancient_raw,
        manifest=at(paths.MANIFEST),
    output:
        images=at(paths.IMAGES),
    log:
        f"{R}/logs/cache_images/{{dataset}}_{{size}}.log",
    priority: PRETRAIN_FIRST
    conda:
        "../../envs/data.yaml"
    threads: config["threads"]["cache_images"]
    params:
        dataset=lambda wildcards: medxfer.config.canonical(
            DATASETS[wildcards.dataset] | {"size": int(wildcards.size)}
        ),
    script:
        "../scripts/run_stage.py"
