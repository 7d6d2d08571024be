"""Test data builders shared by every test package: DICOM files, model registries, users."""
