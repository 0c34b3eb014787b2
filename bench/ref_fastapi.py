"""The textbook reference: FastAPI, a pydantic AdmissionReview model, `allowed: true` with the uid.

This is how most Python admission webhooks are written (tutorials, cookiecutters): the body is
validated into models, the answer is a response model. The pod itself stays a dict, as in those
examples; modelling it too would only make this reference slower. Served by bench/refs.py.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

API_VERSION = "admission.k8s.io/v1"


class GroupVersionKind(BaseModel):
    group: str
    version: str
    kind: str


class GroupVersionResource(BaseModel):
    group: str
    version: str
    resource: str


class UserInfo(BaseModel):
    username: str | None = None
    uid: str | None = None
    groups: list[str] | None = None
    extra: dict[str, list[str]] | None = None


class AdmissionRequest(BaseModel):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str | None = None
    requestKind: GroupVersionKind | None = None
    requestResource: GroupVersionResource | None = None
    requestSubResource: str | None = None
    name: str | None = None
    namespace: str | None = None
    operation: str
    userInfo: UserInfo
    object: dict[str, Any] | None = None
    oldObject: dict[str, Any] | None = None
    dryRun: bool | None = None
    options: dict[str, Any] | None = None


class AdmissionReview(BaseModel):
    apiVersion: str
    kind: str
    request: AdmissionRequest


class AdmissionResponse(BaseModel):
    uid: str
    allowed: bool
    patchType: str | None = None
    patch: str | None = None
    warnings: list[str] | None = None


class AdmissionReviewResponse(BaseModel):
    apiVersion: str = API_VERSION
    kind: str = "AdmissionReview"
    response: AdmissionResponse


def factory() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate", response_model=AdmissionReviewResponse, response_model_exclude_none=True)
    async def mutate(review: AdmissionReview) -> AdmissionReviewResponse:
        return AdmissionReviewResponse(response=AdmissionResponse(uid=review.request.uid, allowed=True))

    @app.get("/readyz")
    async def readyz() -> str:
        return "ok"

    return app
