"""The PACS: DICOMweb transport (:mod:`~core.pacs.dicomweb`: QIDO-RS search, WADO-RS retrieve,
STOW-RS store, DICOM PS3.18) and the DICOM objects LungReview sends back
(:mod:`~core.pacs.export`: Secondary Capture and TID 1500 Structured Report builders, on highdicom).

Nothing is imported here: ``core.pacs.export`` loads highdicom (about 1-2 s), which a reader who
never exports should not pay for.
"""
