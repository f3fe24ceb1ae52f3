"""What every layer stands on: data sets, argument checks, errors, atomic files, checkpoints, results, DDP."""
