"""Pydantic wire schemas shared by the API and the SDK."""
