"""A real MCP server (the official Python SDK's MCPServer, formerly FastMCP) whose tools misbehave on purpose.

Usage: trouble_server.py [stdio | http PORT]
"""

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("trouble", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Returns its input."""
    return text


@server.tool()
def fail(reason: str = "it broke") -> str:
    """Always raises: the SDK reports it as a tool result with isError."""
    raise RuntimeError(reason)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleeps, then answers."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(structured_output=False)
def big(megabytes: float = 10) -> str:
    """Returns a very long text (as text content only: structured output would repeat it in the same message)."""
    return "x" * int(megabytes * 1024 * 1024)


@server.tool()
def crash() -> str:
    """Kills its own process in the middle of the call."""
    sys.stdout.flush()
    os._exit(3)


@server.tool()
def pid() -> str:
    """The server's process id (tests check a crashed server was replaced)."""
    return str(os.getpid())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
