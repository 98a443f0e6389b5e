"""course_utils: the heavy lifting behind the LLM course notebooks (one concept per module)."""

from . import exercises  # noqa: F401  (cu.exercises.check_*)
from .env import Profile, device, doctor, profile, seed_everything
from .models import load_model
