"""The query layer: parameters, planning, aggregation and output formats, shared by the HTTP API
and the CLI."""
