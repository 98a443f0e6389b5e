"""Interactive widgets for class demos, one module per lecture. Each is a thin shell over pure functions the tests call
directly; a widget catches errors from its callbacks and shows them as a message, so it cannot crash the kernel; and a
displayed widget carries a picture of its default view, which a stored notebook shows to readers without a kernel."""

from .attention import attention_explorer  # noqa: F401
from .core import Explorer, View, default_view_picture, live_rows, run_update, safe_callback, show  # noqa: F401
from .decoding import decoding_explorer  # noqa: F401
from .evaluation import eval_size_explorer, eval_size_report  # noqa: F401
from .memory import memory_explorer, memory_explorer_report  # noqa: F401
from .moe import moe_explorer  # noqa: F401
from .norms import norm_explorer  # noqa: F401
from .positional import rope_explorer  # noqa: F401
from .quant import quant_explorer  # noqa: F401
from .rag import rag_explorer  # noqa: F401
