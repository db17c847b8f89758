"""The project's URLs. The pages are mounted at ``/jobs/`` in ``wsgi.py``, beside Django."""

from __future__ import annotations

from django.urls import path

from examples.django_project.reports import views

urlpatterns = [path("reports/<str:region>/", views.order_report)]
