import enum


class Role(enum.IntEnum):
    VIEWER = 1
    MEMBER = 2
    MAINTAINER = 3
