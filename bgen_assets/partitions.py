"""Partitions of each dataset: users and calendar weeks as dynamic partitions, registered
when raw events are ingested. A synthetic partition is one (user, week) pair; multi-partition
keys read `USER|WEEK` (dimension names in alphabetical order)."""

from __future__ import annotations

from functools import cache

from dagster import DynamicPartitionsDefinition, MultiPartitionsDefinition

USER, WEEK = "user", "week"


@cache
def users(dataset: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{dataset}_users")


@cache
def weeks(dataset: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{dataset}_weeks")


@cache
def user_weeks(dataset: str) -> MultiPartitionsDefinition:
    return MultiPartitionsDefinition({USER: users(dataset), WEEK: weeks(dataset)})

