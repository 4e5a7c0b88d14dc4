"""Pipelines fastdit builds itself: tiny random-weight models for offline tests, demos and CI."""
