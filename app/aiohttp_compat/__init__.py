"""Changes to aiohttp's behaviour the worker needs, installed by one explicit call at start-up."""

from __future__ import annotations

from app.aiohttp_compat.request_handler import (
    ParserErrorResponse,
    answer_parser_errors_with,
    check_aiohttp_version,
    record_arrivals,
)


def install(parser_error_response: ParserErrorResponse) -> None:
    """Check the aiohttp in use, then answer parser errors with `parser_error_response` and time arrivals."""
    check_aiohttp_version()
    answer_parser_errors_with(parser_error_response)
    record_arrivals()
