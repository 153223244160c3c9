rule assess_robustness:
    input:
        unpack(target_inputs),
        unpack(robustness_inputs),
    output:
        table=at(paths.ROBUSTNESS_TABLE),
        plot=report(
            at(paths.ROBUSTNESS_PLOT),
            caption="../report/robustness.rst",
            category="Robustness",
            subcategory="{target}",
            labels={"init": "{init}"},
        ),
    log:
        f"{R}/logs/assess_robustness/{{target}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/assess_robustness/{{target}}/{{init}}/seed{{seed}}.tsv"
    priority: chain_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["assess_robustness"]
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        **job_params(jobs.robustness_params),
    script:
        "../scripts/run_stage.py"
