"""The Triton edge: its model repository, the server and its gateway, who may call what, and the workstation's client."""
