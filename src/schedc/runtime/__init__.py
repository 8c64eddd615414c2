"""Stage 5, running compiled phases: the chunk loop (single fits and batched fits), results
and histories, progress, and checkpoints."""
