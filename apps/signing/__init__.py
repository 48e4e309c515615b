"""The signing service: key backends and the signer tasks (the only code on the signer queue)."""
