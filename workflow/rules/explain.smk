rule explain_model:
    input:
        unpack(target_inputs),
        weights=model_files("model.safetensors"),
        metas=model_files("model.json"),
    output:
        folders=explain_outputs("folder"),
        # outside the folders: the summary's input is then a file Snakemake checksums, not a folder's time
        faithfulness=explain_outputs("faithfulness"),
    log:
        f"{R}/logs/explain_model/{{target}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/explain_model/{{target}}/{{init}}/seed{{seed}}.tsv"
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
