"""Each lab's training as a script (`python -m course_utils.labs.sft --config configs/sft_ci.json`), calling the
same course_utils code the notebooks call; runs as is under `torchrun` and `accelerate launch` (DDP).
common.py holds what the three scripts share: the command line, config files, the process group."""
