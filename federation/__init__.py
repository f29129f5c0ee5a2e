"""The contract between ServerApp and ClientApp: the run configuration and the message format."""
