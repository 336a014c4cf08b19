"""The shipped job specs (TOML), importable as package data ``sononet.jobspecs`` so `sononet-batch
train-all` finds them from a normal install as well as from this checkout."""
