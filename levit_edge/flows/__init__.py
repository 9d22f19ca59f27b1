"""One module per command's flow: each sequences stages, builds the report from their typed results and
writes the run through the run store (levit_edge/runs). The CLI and levit_edge.api call these."""
