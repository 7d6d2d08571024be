"""Offline evaluation of registered models and of core's rules on the shared data.

* :mod:`~models.evaluation.evaluate`: metrics of a model on its test split (``evaluation.json``);
* :mod:`~models.evaluation.dicom_check`: the model on the annotated DICOM studies (``dicom_check.json``);
* :mod:`~models.evaluation.lung_check`: the lung-field masks against the lesion outlines;
* :mod:`~models.evaluation.localization`: Grad-CAM mass inside the TCIA tumour boxes;
* :mod:`~models.evaluation.bench`: latency and throughput of the inference path.
"""
