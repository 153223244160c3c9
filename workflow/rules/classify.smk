rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        model=classify_outputs("model.skops"),
        predictions=classify_outputs("predictions.csv"),
        oof=classify_outputs("oof.csv"),
        metrics=classify_outputs("metrics.json"),
        roc=classify_outputs("roc.csv"),
        roc_plot=reported("roc.png", "ROC curves"),
        confusion_plot=reported("confusion.png", "Confusion matrices"),
    log:
        f"{R}/logs/train_classifier/{{target}}/{{init}}/{{clf}}.log",
    benchmark:
        f"{R}/benchmarks/train_classifier/{{target}}/{{init}}/{{clf}}.tsv"
    priority: CHAIN_FIRST
    conda:
        "../../envs/sklearn.yaml"
    threads: config["threads"]["train_classifier"]
    params:
        hyperparameters=lambda wildcards: config["classifiers"][wildcards.clf],
        seed=run_seed,
        decision=config["decision"]["threshold"],
        pca_components=config["classify"]["pca_components"],
    script:
        "../scripts/train_classifier.py"
