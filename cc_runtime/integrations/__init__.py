"""Entry points that upstream projects call into (SGLang's plugin group)."""
