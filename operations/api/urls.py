from django.urls import path

from . import divergences, replays, rollbacks

urlpatterns = [
    path("replays/", replays.ReplayList.as_view(), name="replay-list"),
    path("replays/<id:replay_id>/", replays.ReplayDetail.as_view(), name="replay-detail"),
    path("replays/<id:replay_id>/steps/<id:seq>/follow-up/",
         divergences.ReplayStepFollowUp.as_view(), name="replay-step-follow-up"),
    path("divergences/", divergences.DivergenceList.as_view(), name="divergence-list"),
    path("rollbacks/", rollbacks.RollbackList.as_view(), name="rollback-list"),
    path("rollbacks/<id:rollback_id>/", rollbacks.RollbackDetail.as_view(),
         name="rollback-detail"),
]
