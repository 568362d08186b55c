"""Trained heads of distilled judges (``.npz`` + manifest ``.json``), package data."""
