"""Tools for tool-calling environments: typed callables, call parsing, and the built-ins.

The search tool's index needs the `tools` extra (bm25s), imported only when one is built.
"""

from envs.tools.builtin import BUILTIN_TOOLS, builtin_tool, resolve_tools
from envs.tools.calculator import calculator_tool
from envs.tools.parsing import TOOL_CALL_FORMATS, TagTool, ToolCall, ToolCallFormat, ToolCallParser
from envs.tools.python_tool import python_tool
from envs.tools.search import BM25Index, Corpus, Document, bundled_corpus, resolve_corpus, search_tool
from envs.tools.shaping import ToolUseShaping
from envs.tools.threads import ToolStuck, ToolThreads
from envs.tools.tool import (
    TOOL_ERROR_KINDS,
    Tool,
    ToolDefinitionError,
    ToolError,
    ToolErrorKind,
    ToolInfrastructureError,
    ToolResult,
    ToolState,
    ToolTimeoutError,
    tool,
)
from envs.tools.toolbox import Toolbox

__all__ = [
    "BUILTIN_TOOLS",
    "TOOL_CALL_FORMATS",
    "TOOL_ERROR_KINDS",
    "BM25Index",
    "Corpus",
    "Document",
    "TagTool",
    "Tool",
    "ToolCall",
    "ToolCallFormat",
    "ToolCallParser",
    "ToolDefinitionError",
    "ToolError",
    "ToolErrorKind",
    "ToolInfrastructureError",
    "ToolResult",
    "ToolState",
    "ToolStuck",
    "ToolThreads",
    "ToolTimeoutError",
    "ToolUseShaping",
    "Toolbox",
    "builtin_tool",
    "bundled_corpus",
    "calculator_tool",
    "python_tool",
    "resolve_corpus",
    "resolve_tools",
    "search_tool",
    "tool",
]
