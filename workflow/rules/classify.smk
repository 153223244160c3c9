rule train_classifiers:
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
        reliability_plot=reported("reliability.png", "Calibration"),
    log:
        f"{R}/logs/train_classifiers/{{target}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_classifiers/{{target}}/{{init}}/seed{{seed}}.tsv"
    priority: chain_priority
    conda:
        "../../envs/sklearn.yaml"
    threads: config["threads"]["train_classifiers"]
    params:
        classifiers=CLASSIFY["classifiers"],
        feature_sets=CLASSIFY["feature_sets"],
        members=CLASSIFY["members"],
        seed=run_seed,
        decision=CLASSIFY["decision"],
        pca_components=CLASSIFY["pca_components"],
    script:
        "../scripts/run_stage.py"
