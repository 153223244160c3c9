# One job per model: a new architecture explains only its own models, and the jobs are short enough to fill both
# cores at the end of a run (two models in one job made a single long job there).
rule explain_model:
    input:
        unpack(target_inputs),
        weights=at(paths.MODEL, "model.safetensors"),
        meta=at(paths.MODEL, "model.json"),
    output:
        folder=reported_folder(at(paths.HEATMAPS)),
        # outside the folder: the summary's input is then a file Snakemake checksums, not a folder's time
        faithfulness=at(paths.FAITHFULNESS),
    log:
        f"{R}/logs/explain_model/{{target}}/{{init}}/seed{{seed}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/explain_model/{{target}}/{{init}}/seed{{seed}}/{{arch}}.tsv"
    priority: HEATMAPS_FIRST
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["explain_model"]
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        **job_params(jobs.explain_settings),
    script:
        "../scripts/run_stage.py"
