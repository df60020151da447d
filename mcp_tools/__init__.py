"""mcp_tools."""
