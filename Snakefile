# medxfer: raw radiographs and CT slices -> pretrained and fine-tuned models, fused features, classifiers,
# heatmaps and a summary. Run: snakemake --cores 2   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/report.smk"


onsuccess:
    # report/run.json: the machine, versions and per-rule job time of the jobs this invocation ran
    medxfer.runrecord.write_run_record(
        R,
        medxfer.runrecord.run_record(
            R,
            invocation_cores(),
            workflow.basedir,
            RUN_STARTED,
            config,
            workflow.configfiles,
        ),
    )


rule all:
    default_target: True
    input:
        final_outputs(),
