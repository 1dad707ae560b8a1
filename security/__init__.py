"""What the workstation's network clients share about security: the TLS files a person names, checked at once."""
