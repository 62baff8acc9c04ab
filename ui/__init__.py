"""User interfaces: command line, REST server, Chainlit app and LangChain tool."""
