"""The run store: a run directory's layout, its staged creation and commit, its self-checking manifest,
its all-or-nothing rewrites, and reopening a finished run. Every command that writes a run goes through
this package; nothing below it (the stages) reads a run directory."""
