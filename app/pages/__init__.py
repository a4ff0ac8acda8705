"""The Panel pages: each view takes the runtime explicitly, never a global."""
