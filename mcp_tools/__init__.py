"""MCP tools: the integrations (GitHub, Supabase, Fly) as audited, replayable MCP tools.

Empty until the MCP issue; the clients they wrap live in clients/ already.
"""
