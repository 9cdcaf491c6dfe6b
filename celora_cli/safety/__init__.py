"""What stands between a command and a loss: the production guard, the environment stamp, and the Host/Origin rules of
celora's local HTTP servers."""
