"""Statistics: figures of merit, reader-study metrics, MRMC analysis and sample size."""
