from __future__ import annotations

if __name__ == "__main__":  # not when imported
    # Imported here, not above: importing this module must not carry the CLI's imports (the
    # HTTP app, the query layer) into the importer.
    from recorder.cli import main

    raise SystemExit(main())
