from __future__ import annotations

if __name__ == "__main__":  # not when a worker process (multiprocessing spawn) imports it
    # Imported here, not above: the worker process imports this module too (as __mp_main__),
    # and must not carry the server's imports (the HTTP app, the query layer).
    from recorder.cli import main

    raise SystemExit(main())
