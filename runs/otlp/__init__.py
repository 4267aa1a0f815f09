"""OpenTelemetry GenAI spans into the ledger: ``wire`` (OTLP/HTTP bodies), ``genai`` (what a
span means under the GenAI semantic conventions), ``assembly`` (a trace's spans -> a run in the
ingestion format), ``services`` (the span buffer and recording), ``views`` (``POST /v1/traces``).
"""
