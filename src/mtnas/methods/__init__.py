"""NAS methods as plugins: one file per method says which stages it adds and what each does (DESIGN.md §4).
The pipeline builds the configured one from `method._target_`; a method uses only `mtnas.run`'s services."""
