"""Bodies of ``/api/v1/auth/me/consents``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from authkeep.services.consents import ConsentState


class ConsentIn(BaseModel):
    """``PUT /auth/me/consents/{purpose}``: grant (``true``) or withdraw (``false``) the
    purpose's current version."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    # Strict: a consent is an explicit JSON true, never "yes", 1 or "on" coerced into one.
    granted: StrictBool = Field(description="true grants, false withdraws")
    version: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="The purpose's current version (the text the user was shown); another "
        "one is a 409"
    )


class ConsentOut(BaseModel):
    """One configured purpose as it stands for the caller."""

    purpose: str
    version: str = Field(description="The purpose's current version")
    required: bool = Field(description="Whether sign-up, and apps that require it, need it")
    granted: bool = Field(description="Granted at the current version")
    granted_version: str | None = Field(
        description="The version the user last granted; null: never, or withdrawn since"
    )
    at: datetime | None = Field(description="When the user last granted or withdrew it")
    outstanding: bool = Field(description="Required and not granted at the current version")

    @classmethod
    def of(cls, state: ConsentState) -> ConsentOut:
        """The public view of a consent's state."""
        return cls(
            purpose=state.purpose,
            version=state.version,
            required=state.required,
            granted=state.granted,
            granted_version=state.granted_version,
            at=state.at,
            outstanding=state.outstanding,
        )
