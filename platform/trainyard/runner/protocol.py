"""Old home of the wire contract; it lives in trainyard.protocol (torch-free, no runner import)."""
from trainyard.protocol import ERROR, PROGRESS, RESULT, find_result, format_line, last_progress, parse_line

__all__ = ["PROGRESS", "RESULT", "ERROR", "format_line", "parse_line", "last_progress", "find_result"]
