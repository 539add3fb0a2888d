"""The CPU run's allocation policy: large freed blocks are reused without page faults, and the host
gets its memory back afterwards."""

from __future__ import annotations

import resource

import pytest
import torch

from colormnet_core import allocator

BLOCK = 96 << 20          # both above glibc's largest dynamic mmap threshold (32 MiB)
SMALLER = 64 << 20

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the policy acts on glibc's malloc only")


def faults_reusing_a_freed_block() -> int:
    """Minor page faults of touching a 64 MiB block right after a 96 MiB one was freed (the next
    frame's activations after this frame's: freed memory of the same or a larger size is there)."""
    torch.ones(BLOCK // 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(SMALLER // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_a_freed_block_is_reused_without_faults_inside_and_returned_after():
    pages = SMALLER // resource.getpagesize()
    assert faults_reusing_a_freed_block() >= pages // 2            # the system policy: a fresh mmap every time
    with allocator.retain_freed_memory() as active:
        assert active
        assert faults_reusing_a_freed_block() <= pages // 50        # reused from the heap
    assert faults_reusing_a_freed_block() >= pages // 2            # thresholds restored
    assert allocator._depth == 0


def test_memory_is_handed_back_when_the_run_ends():
    with allocator.retain_freed_memory():
        torch.ones(BLOCK // 4)
        inside = rss_bytes()
    assert rss_bytes() <= inside - BLOCK // 2


def test_nested_blocks_restore_only_at_the_outermost():
    pages = SMALLER // resource.getpagesize()
    with allocator.retain_freed_memory():
        with allocator.retain_freed_memory():
            pass
        assert allocator._depth == 1
        assert faults_reusing_a_freed_block() <= pages // 50        # still in force after the inner block
    assert allocator._depth == 0


def test_opt_out_leaves_the_system_allocator(monkeypatch):
    monkeypatch.setenv("COLORMNET_SYSTEM_MALLOC", "1")
    pages = SMALLER // resource.getpagesize()
    with allocator.retain_freed_memory() as active:
        assert not active
        assert faults_reusing_a_freed_block() >= pages // 2


def test_restores_even_when_the_run_fails():
    pages = SMALLER // resource.getpagesize()
    with pytest.raises(RuntimeError), allocator.retain_freed_memory():
        raise RuntimeError("boom")
    assert allocator._depth == 0
    assert faults_reusing_a_freed_block() >= pages // 2
