"""Statistics of LungReview's evaluations and studies, in plain NumPy/SciPy/scikit-learn (no I/O).

* :mod:`~core.stats.metrics`: classification metrics of a model (accuracy, F1, ROC AUC, ECE,
  reliability diagram) with patient-grouped bootstrap intervals;
* :mod:`~core.stats.reader_metrics`: the reader-study analysis (sensitivity, specificity, ROC AUC
  of the malignancy rating, changes of mind, automation bias, times);
* :mod:`~core.stats.agreement`: Cohen's kappa (once) and Fleiss' kappa;
* :mod:`~core.stats.sus`: the SUS summary interval (the questionnaire is ``core.domain``);
* :mod:`~core.stats.mrmc`: multi-reader multi-case analysis (ROC AUC, wAFROC, Obuchowski-Rockette-Hillis);
  :mod:`~core.stats.sample_size`: power and sample size of the next study; :mod:`~core.stats.mrmc_io`: CSV
  and RJafroc layouts;
* :mod:`~core.stats.bootstrap`: the one bootstrap: ``scipy.stats.bootstrap`` where cases are
  independent, a grouped resampler where they are not, one percentile rule.
"""
