rule check_source_overlap:
    input:
        target=at(paths.MANIFEST, dataset="{target}"),
        sources=lambda wildcards: [manifest_of(s) for s in indomain_sources()],
    output:
        overlap=at(paths.SOURCE_OVERLAP),
    log:
        f"{R}/logs/check_source_overlap/{{target}}.log",
    priority: PRETRAIN_FIRST  # it stops the run when it fails: better before the training than after
    conda:
        "../../envs/data.yaml"
    params:
        **job_params(jobs.overlap_settings),
    script:
        "../scripts/run_stage.py"
